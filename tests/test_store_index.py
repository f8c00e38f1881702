"""The LMDB index answers every lookup as a plain-Python model of the same blocks does, before
and after reopening, truncating (inside and beyond the undo window) and growing its map.

Method: random blocks (numpy) go both into the index and into dictionaries and lists built here;
every query is compared with the model. Truncation is checked against the model of the kept
blocks; map growth is forced with a tiny initial map while reader threads keep querying.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagi.errors import EncodingError
from tsunagi.ledger import store_limits
from tsunagi.ledger.index import BlockEntries, Index, TxLocation


def random_blocks(count: int, records: int, seed: int, accounts: int = 12) -> list[BlockEntries]:
    rng = np.random.default_rng(seed)
    blocks = []
    for height in range(count):
        size = int(rng.integers(1, records + 1))
        blocks.append(BlockEntries(
            height, rng.bytes(32), rng.integers(0, 256, (size, 32), dtype=np.uint8),
            rng.integers(0, 40, size, dtype=np.uint8),
            rng.integers(0, accounts, size).astype(np.uint64),  # 0 is "no account"
            rng.integers(0, accounts, size).astype(np.uint64)))
    return blocks


class Model:
    """What the index should answer, computed the obvious way."""

    def __init__(self, blocks: list[BlockEntries]):
        self.tx: dict[bytes, TxLocation] = {}
        self.history: dict[int, set[tuple[int, int]]] = {}
        self.hashes = {block.height: block.block_hash for block in blocks}
        for block in blocks:
            for position in range(len(block.codes)):
                txid = block.txids[position].tobytes()
                self.tx.setdefault(txid, TxLocation(block.height, position,
                                                    int(block.codes[position])))
                for account in {int(block.debit_accounts[position]),
                                int(block.credit_accounts[position])} - {0}:
                    self.history.setdefault(account, set()).add((block.height, position))

    def newest_first(self, account: int) -> list[tuple[int, int]]:
        return sorted(self.history.get(account, ()), reverse=True)


def assert_matches(index: Index, model: Model, probes: list[BlockEntries]) -> None:
    assert index.indexed_height == len(model.hashes)
    for height, block_hash in model.hashes.items():
        assert index.block_hash(height) == block_hash
        assert index.block_height(block_hash) == height
    txids = np.concatenate([block.txids for block in probes])
    assert index.txs(txids) == [model.tx.get(row.tobytes()) for row in txids]
    assert index.tx(txids[0].tobytes()) == model.tx.get(txids[0].tobytes())
    for account in range(12):
        assert index.account_history(account, limit=10_000) == model.newest_first(account)
    assert index.block_hash(len(model.hashes)) is None


def fill(index: Index, blocks: list[BlockEntries]) -> None:
    for block in blocks:
        index.add_block(*block)


def test_lookups_match_the_model_and_survive_reopening(tmp_path):
    blocks = random_blocks(25, 60, seed=1)
    with Index.open(tmp_path) as index:
        fill(index, blocks[:10])
        index.add_blocks(blocks[10:])  # the catching-up path: many blocks, one transaction
        assert_matches(index, Model(blocks), blocks)
        assert index.tx(bytes(32)) is None and index.block_height(bytes(32)) is None
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks), blocks)


@pytest.fixture(scope="module")
def paged(tmp_path_factory):
    """Two indexes of random blocks, built once for every example below."""
    built = {}
    for seed in (0, 1):
        blocks = random_blocks(12, 40, seed=seed)
        index = Index.open(tmp_path_factory.mktemp(f"pages{seed}"))
        index.add_blocks(blocks)
        built[seed] = (index, Model(blocks))
    yield built
    for index, _ in built.values():
        index.close()


@settings(max_examples=60, deadline=None)
@given(account=st.integers(1, 11), limit=st.integers(1, 30), seed=st.integers(0, 1))
def test_history_pages_walk_back_through_everything_once(paged, account, limit, seed):
    index, model = paged[seed]
    pages, before = [], None
    while page := index.account_history(account, limit=limit, before=before):
        assert len(page) <= limit
        pages += page
        before = page[-1]
    assert pages == model.newest_first(account)
    assert index.account_history(account, limit=limit, before=(0, 0)) == []


@pytest.mark.parametrize("undo_blocks", [100, 3])
def test_truncate_above_equals_never_having_indexed_the_dropped_blocks(tmp_path, monkeypatch,
                                                                       undo_blocks):
    monkeypatch.setattr(store_limits, "index_undo_blocks", undo_blocks)  # 3: the full scan
    blocks = random_blocks(20, 50, seed=2)
    # Block 15 repeats a txid of block 4: the index keeps the first place, and dropping block 15
    # must not forget it.
    blocks[15].txids[0] = blocks[4].txids[7]
    with Index.open(tmp_path) as index:
        fill(index, blocks)
        index.truncate_above(8)
        assert_matches(index, Model(blocks[:8]), blocks)
        fill(index, blocks[8:12])
        assert_matches(index, Model(blocks[:12]), blocks)
        index.truncate_above(12)  # nothing above: no change
        assert index.indexed_height == 12
    with Index.open(tmp_path) as index:
        assert_matches(index, Model(blocks[:12]), blocks)


def test_blocks_out_of_order_or_misshapen_are_refused(tmp_path):
    block = random_blocks(1, 5, seed=3)[0]
    with Index.open(tmp_path) as index:
        with pytest.raises(ValueError, match="out of order"):
            index.add_block(1, *block[1:])
        with pytest.raises(EncodingError):
            index.add_block(0, block.block_hash, block.txids[:, :31], *block[3:])
        with pytest.raises(EncodingError):
            index.add_block(0, block.block_hash, block.txids, block.codes,
                            block.debit_accounts[:-1], block.credit_accounts)
        assert index.indexed_height == 0 and index.txs(block.txids) == [None] * len(block.codes)


def test_owner_keys_map_to_their_accounts_and_a_reorg_drops_new_ones(tmp_path):
    alice, bob = os.urandom(32), os.urandom(32)
    with Index.open(tmp_path) as index:
        index.add_accounts([(alice, 1), (bob, 2), (alice, 7), (alice, 3)])
        index.add_accounts([(bob, 9)])
        assert index.accounts_of(alice) == [1, 3, 7] and index.accounts_of(bob) == [2, 9]
        index.drop_accounts(5)
        assert index.accounts_of(alice) == [1, 3] and index.accounts_of(bob) == [2]
        assert index.accounts_of(os.urandom(32)) == []
        with pytest.raises(EncodingError):
            index.add_accounts([(alice[:31], 4)])


def test_a_full_map_grows_and_the_write_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(store_limits, "index_map_bytes_initial", 1 << 18)
    blocks = random_blocks(40, 400, seed=4)
    with Index.open(tmp_path) as index:
        start_bytes = index.map_bytes
        index.add_blocks(blocks)  # one transaction far larger than the map: MapFullError
        # Growing ahead of a write doubles the map once; more than that took MapFullError.
        assert index.map_bytes >= 4 * start_bytes
        assert_matches(index, Model(blocks), blocks[::7])


def test_the_map_grows_while_readers_keep_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(store_limits, "index_map_bytes_initial", 1 << 18)
    blocks = random_blocks(40, 400, seed=5)
    failures: list[str] = []
    done = threading.Event()
    with Index.open(tmp_path) as index:
        start_bytes = index.map_bytes

        def read_forever() -> None:
            while not done.is_set():
                height = index.indexed_height
                if height and index.tx(blocks[height - 1].txids[0].tobytes()) is None:
                    failures.append(f"block {height - 1} indexed but its txid missing")

        readers = [threading.Thread(target=read_forever) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            fill(index, blocks)
        finally:
            done.set()
            for reader in readers:
                reader.join()
        assert index.map_bytes > start_bytes
        assert failures == []
        assert_matches(index, Model(blocks), blocks[::7])
