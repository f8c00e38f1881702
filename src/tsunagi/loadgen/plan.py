"""Keys and accounts of a load run: the plan, and the chains and accounts made for it.

Keys come from ``--seed``: the issuer key (index 0) and ``--keys`` owner keys (1..K), each
owning a contiguous block of the accounts. :func:`prepare_chain` creates a chain whose issuer is
that key, with accounts 2 .. N+1 opened and funded, for a node to serve; :func:`setup_accounts`
opens and funds N new accounts on a running node instead (its chain must have the seed's issuer
key as account 1, as a prepared chain has); :func:`target_plan` checks that a running node
holds a prepared chain's accounts, and says how to make such a chain when it does not.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tsunagi import hashing
from tsunagi.core.block import BatchAuth
from tsunagi.core.codes import Result
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.core.records import RECORD_BYTES, Kind, pack_many
from tsunagi.errors import ConfigError
from tsunagi.limits import block_records_max
from tsunagi.loadgen.limits import (
    accounts_max,
    chain_id_default,
    funding_units,
    keys_max,
    seed_default,
    target_checks_at_once,
)
from tsunagi.node import limits as node_limits

__all__ = ["Plan", "loadgen_key", "prepare_chain", "setup_accounts", "target_plan"]

ISSUER_ACCOUNT = 1  # a config's first issuer is account 1
FIRST_ACCOUNT = 2  # a prepared chain's load accounts follow the issuer
# A remote setup request holds the most records a request may; a local one the most a block may.
SETUP_REMOTE_RECORDS = node_limits.request_records_max
SETUP_LOCAL_RECORDS = block_records_max


def loadgen_key(seed: int, index: int) -> PrivateKey:
    """Key ``index`` of ``seed`` (0 the issuer, 1..K the owners): SHA-256d of the two numbers."""
    return PrivateKey.from_bytes(hashing.sha256d(struct.pack("<QQ", seed, index)))


@dataclass(frozen=True)
class Plan:
    """The accounts a run uses and who owns them; owner k holds a contiguous block of them."""

    chain_id: int
    seed: int
    key_count: int
    accounts: np.ndarray  # account numbers, by position

    def owner_of(self, positions: np.ndarray) -> np.ndarray:
        """Owner key index (0..K-1) of the accounts at ``positions``."""
        return np.asarray(positions, np.int64) * self.key_count // len(self.accounts)

    def key_blocks(self, first: int, stop: int) -> list[tuple[int, int, int]]:
        """(start, stop, owner) ranges of positions first..stop-1 with one owner each."""
        owners = self.owner_of(np.arange(first, stop))
        cuts = np.flatnonzero(np.diff(owners)) + 1
        starts = np.concatenate(([0], cuts)) + first
        stops = np.concatenate((cuts, [stop - first])) + first
        return [(int(a), int(b), int(owners[a - first])) for a, b in zip(starts, stops)]

    def owner_keys(self) -> list[PrivateKey]:
        return [loadgen_key(self.seed, 1 + k) for k in range(self.key_count)]


def _check_plan_sizes(accounts: int, keys: int) -> None:
    if not 2 <= accounts <= accounts_max:
        raise ConfigError(f"--accounts is 2..{accounts_max:,}, got {accounts:,}")
    if not 1 <= keys <= min(keys_max, accounts):
        raise ConfigError(f"--keys is 1..{min(keys_max, accounts)}, got {keys}")


def _sequence_base() -> int:
    # Nanoseconds since 1970 grow faster than any run can use sequences, so a later run's
    # sequences are above an earlier run's on every account (u64 holds it until 2554).
    return time.time_ns()


def _new_records(count: int, kind: Kind, chain_id: int, sequences, debit, credit, amount,
                 authorized: bool) -> np.ndarray:
    return pack_many(count, kind, chain_id=chain_id, sequence=sequences, debit_account=debit,
                     credit_account=credit, amount=amount, batch_authorized=authorized)


def _txids(records: np.ndarray) -> np.ndarray:
    return hashing.sha256d_records(memoryview(records).cast("B"), RECORD_BYTES,
                                   hashing.cpu_count())


def _authorize(records: np.ndarray, txids: np.ndarray, ranges, keys) -> list[BatchAuth]:
    """One BatchAuth per (start, stop, key) range of ``records`` (positions within them)."""
    return [BatchAuth(start, stop - start, keys[k].public_key,
                      keys[k].sign(hashing.merkle_root(txids[start:stop])))
            for start, stop, k in ranges]


def _open_requests(plan_keys: list[PrivateKey], plan: Plan, chunk: int
                   ) -> Iterator[tuple[np.ndarray, list[BatchAuth]]]:
    """open_account requests for every position, each covered by its owners' batch entries."""
    base, total = _sequence_base(), len(plan.accounts)
    for first in range(0, total, chunk):
        stop = min(total, first + chunk)
        # An open_account's sequence is free: the clock makes a repeated setup's records new.
        records = _new_records(stop - first, Kind.open_account, plan.chain_id,
                               base + np.arange(first, stop), 0, 0, 0, True)
        ranges = [(a - first, b - first, k) for a, b, k in plan.key_blocks(first, stop)]
        for a, b, k in ranges:
            records["data"][a:b] = np.frombuffer(plan_keys[k].public_key, np.uint8)
        yield records, _authorize(records, _txids(records), ranges, plan_keys)


def _mint_requests(plan: Plan, issuer: PrivateKey, chunk: int
                   ) -> Iterator[tuple[np.ndarray, list[BatchAuth]]]:
    base, total = _sequence_base(), len(plan.accounts)
    for first in range(0, total, chunk):
        stop = min(total, first + chunk)
        records = _new_records(stop - first, Kind.mint, plan.chain_id,
                               base + np.arange(first, stop), ISSUER_ACCOUNT,
                               plan.accounts[first:stop], funding_units, True)
        yield records, _authorize(records, _txids(records), [(0, stop - first, 0)], [issuer])


def _expect_ok(codes: np.ndarray, what: str) -> None:
    failed = np.flatnonzero(codes)
    if len(failed):
        names = sorted({Result(int(codes[i])).name for i in failed[:100]})
        raise ConfigError(f"setup: {len(failed)} {what} records failed ({', '.join(names)}); "
                          "is the seed's issuer key account 1 of this chain?")


def _prepared_plan(chain_id: int, seed: int, accounts: int, keys: int) -> Plan:
    return Plan(chain_id, seed, keys,
                np.arange(FIRST_ACCOUNT, FIRST_ACCOUNT + accounts, dtype=np.uint64))


def prepare_chain(path, accounts: int, *, keys: int = 8, seed: int = seed_default,
                  chain_id: int = chain_id_default,
                  progress: Callable[[str, int, int], None] | None = None,
                  validators: Sequence[PrivateKey] = (), **config_fields) -> Plan:
    """Creates a chain in ``path`` with ``accounts`` funded load accounts (2 .. N+1).

    ``validators`` makes it a consortium chain of those keys (weight 1 each), whose setup
    blocks they certify here; ``config_fields`` are further ChainConfig fields (timeouts)."""
    from tsunagi.ledger import Ledger

    _check_plan_sizes(accounts, keys)
    issuer = loadgen_key(seed, 0)
    if validators:
        config_fields["validators"] = tuple((key.public_key, 1) for key in validators)
    config = ChainConfig(name="loadgen", chain_id=chain_id, asset_code="TSU",
                         issuers=(issuer.public_key,), block_records_max=block_records_max,
                         **config_fields)
    plan = _prepared_plan(chain_id, seed, accounts, keys)
    with Ledger.create(path, config) as ledger:
        submit_batch = ledger.submit_batch
        if validators:
            from tsunagi.consensus.consortium import ConsortiumChain

            chain = ConsortiumChain(ledger)

            def submit_batch(records, signatures, batches):
                return chain.commit_with_keys(validators, records, signatures, batches)
        done = 0
        for records, auths in _open_requests(plan.owner_keys(), plan, SETUP_LOCAL_RECORDS):
            answer = submit_batch(records, b"", auths)
            _expect_ok(answer.codes, "open_account")
            if not np.array_equal(answer.opened, plan.accounts[done:done + len(records)]):
                raise ConfigError("setup: accounts were not opened with the expected numbers")
            done += len(records)
            if progress:
                progress("opened", done, accounts)
        done = 0
        for records, auths in _mint_requests(plan, issuer, SETUP_LOCAL_RECORDS):
            _expect_ok(submit_batch(records, b"", auths).codes, "mint")
            done += len(records)
            if progress:
                progress("funded", done, accounts)
    return plan


async def setup_accounts(client, accounts: int, *, keys: int = 8, seed: int = seed_default,
                         progress: Callable[[str, int, int], None] | None = None) -> Plan:
    """Opens and funds ``accounts`` new load accounts on the node ``client`` talks to."""
    _check_plan_sizes(accounts, keys)
    welcome = client.welcome or await client.connect()
    plan = Plan(welcome.chain_id, seed, keys, np.zeros(accounts, np.uint64))
    await _check_issuer(client, seed, accounts)
    done = 0
    for records, auths in _open_requests(plan.owner_keys(), plan, SETUP_REMOTE_RECORDS):
        answer = await client.submit_batch(records.tobytes(), b"", auths)
        _expect_ok(answer.codes, "open_account")
        plan.accounts[done:done + len(records)] = answer.opened
        done += len(records)
        if progress:
            progress("opened", done, accounts)
    done = 0
    for records, auths in _mint_requests(plan, loadgen_key(seed, 0), SETUP_REMOTE_RECORDS):
        answer = await client.submit_batch(records.tobytes(), b"", auths)
        _expect_ok(answer.codes, "mint")
        done += len(records)
        if progress:
            progress("funded", done, accounts)
    return plan


async def _check_issuer(client, seed: int, accounts: int) -> None:
    """Refuses a target whose account 1 is not the seed's issuer key: the load generator then
    holds no key of a funded account there, and cannot fund any either."""
    issuer = await client.account(ISSUER_ACCOUNT)
    if issuer is None or not issuer.issuer or issuer.owner_key != loadgen_key(seed, 0).public_key:
        raise ConfigError(
            f"the target's chain was not made by `tsunagi loadgen --prepare` with --seed {seed} "
            f"(its account {ISSUER_ACCOUNT} is not that seed's issuer key), so the load "
            "generator knows the key of no funded account there and can fund none (--setup). "
            f"Make such a chain and serve it: `tsunagi loadgen --prepare DIR --accounts "
            f"{accounts}`, then `tsunagi node --data DIR`, then `tsunagi loadgen --target "
            "HOST:PORT ...` (or `tsunagi loadgen --prepare DIR --spawn DIR ...` for all three)")


async def target_plan(client, accounts: int, *, keys: int = 8, seed: int = seed_default
                      ) -> Plan:
    """The plan of a prepared chain, after checking that the target holds its accounts: the
    seed's issuer is account 1, and the first and last account of each owner key's block are
    that key's."""
    _check_plan_sizes(accounts, keys)
    welcome = client.welcome or await client.connect()
    plan = _prepared_plan(welcome.chain_id, seed, accounts, keys)
    await _check_issuer(client, seed, accounts)
    owner_keys = plan.owner_keys()
    ends = sorted({end for start, stop, _ in plan.key_blocks(0, accounts)
                   for end in (start, stop - 1)})
    for first in range(0, len(ends), target_checks_at_once):
        positions = ends[first:first + target_checks_at_once]
        infos = await asyncio.gather(*(client.account(int(plan.accounts[position]))
                                       for position in positions))
        owners = plan.owner_of(np.array(positions))
        for position, owner, info in zip(positions, owners.tolist(), infos):
            if info is None or info.owner_key != owner_keys[owner].public_key:
                raise ConfigError(
                    f"account {int(plan.accounts[position])} of the target is not a load "
                    f"account of seed {seed} with {keys} keys: give the --accounts and --keys "
                    f"the chain was prepared with, or pass --setup to open and fund "
                    f"{accounts:,} new accounts there")
    return plan
