"""A damaged index recovers on open: a truncated, bit-flipped, zero-filled (never synced) or
missing run is dropped with every later run, indexed_height falls back to where the survivors
end, leftovers are deleted, and a ledger on top catches up from its block log. A run cut short
while the index is open makes lookups raise, never answer "unknown".

Method: an index of random blocks in several runs is closed, one file is damaged on disk, and the
reopened index must answer exactly as the plain-Python model of the surviving blocks (the model
of tests/test_store_index.py), then as the model of all blocks once the dropped ones are added
again. A ledger's index run is damaged the same way and the reopened ledger must find every
transaction and history entry it committed.
"""

from __future__ import annotations

import logging
import os

import pytest
from test_store_index import Model, assert_matches, random_blocks, run_files

from tsunagi.core import records
from tsunagi.core.config import ChainConfig
from tsunagi.core.keys import PrivateKey
from tsunagi.errors import StorageError
from tsunagi.ledger import Ledger
from tsunagi.ledger import limits as ledger_limits
from tsunagi.ledger.index import FOLDER, MANIFEST, Index

GROUPS = [(0, 8), (8, 12), (12, 14), (14, 15)]  # four runs: heights [0, 8), [8, 12), ...


@pytest.fixture
def built(tmp_path, monkeypatch):
    """An index of 15 random blocks in four run files (no memory, a fan-out of 64: no merge)."""
    monkeypatch.setattr(ledger_limits, "index_memory_bytes_max", 0)
    monkeypatch.setattr(ledger_limits, "index_merge_fanout", 64)
    blocks = random_blocks(15, 40, seed=11)
    with Index.open(tmp_path) as index:
        for first, end in GROUPS:
            index.add_blocks(blocks[first:end])
        runs = [(run.first, run.end, run.path) for run in index._current().blocks]
    assert [(first, end) for first, end, _ in runs] == GROUPS
    return tmp_path, blocks, runs


def damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[:len(data) - 7])
    elif how == "bit flipped":
        data[len(data) * 2 // 3] ^= 0x10
        path.write_bytes(data)
    elif how == "zero filled":  # what a run never synced may hold after a power loss
        path.write_bytes(bytes(len(data)))
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "bit flipped", "zero filled", "missing"])
@pytest.mark.parametrize("which", [1, 3])
def test_a_damaged_run_is_dropped_with_every_later_one(built, caplog, how, which):
    directory, blocks, runs = built
    damage(runs[which][2], how)
    fallback = runs[which][0]
    with caplog.at_level(logging.WARNING), Index.open(directory) as index:
        assert f"falls back to height {fallback}" in caplog.text
        assert_matches(index, Model(blocks[:fallback]), blocks)
        assert run_files(directory) == {path.name for _, _, path in runs[:which]}
        index.add_blocks(blocks[fallback:])  # what the ledger's catching up does
        assert_matches(index, Model(blocks), blocks)
    with Index.open(directory) as index:
        assert_matches(index, Model(blocks), blocks)


def test_a_run_cut_short_while_open_fails_lookups_loudly_never_answers_none(built):
    """A file's Bloom filter and fence are read from the file at each lookup: a run cut short
    under an open index raises StorageError naming it, rather than calling a txid unknown; the
    runs before it still answer, and reopening drops it as any damaged run."""
    directory, blocks, runs = built
    with Index.open(directory) as index:
        os.truncate(runs[1][2], 200)
        first = blocks[0].txids[0].tobytes()
        assert index.tx(first) == Model(blocks).tx[first]
        for lookup in (lambda: index.tx(os.urandom(32)),
                       lambda: index.tx(blocks[9].txids[0].tobytes()),
                       lambda: index.block_height(blocks[9].block_hash)):
            with pytest.raises(StorageError, match=runs[1][2].name):
                lookup()
    with Index.open(directory) as index:
        assert_matches(index, Model(blocks[:GROUPS[1][0]]), blocks)


def test_leftover_files_are_deleted_and_nothing_else_changes(built):
    directory, blocks, runs = built
    folder = directory / FOLDER
    (folder / "blocks-9999999999.run").write_bytes(os.urandom(4096))  # a merge cut short
    (folder / "manifest.tmp").write_bytes(b"half a manifest")
    (folder / "notes.txt").write_text("not ours either")
    with Index.open(directory) as index:
        assert run_files(directory) == {path.name for _, _, path in runs}
        assert_matches(index, Model(blocks), blocks)


def test_a_damaged_manifest_starts_the_index_over(built, caplog):
    directory, blocks, _ = built
    manifest = directory / FOLDER / MANIFEST
    data = bytearray(manifest.read_bytes())
    data[20] ^= 1
    manifest.write_bytes(data)
    with caplog.at_level(logging.WARNING), Index.open(directory) as index:
        assert "manifest" in caplog.text and "damaged" in caplog.text
        assert_matches(index, Model([]), blocks)
        assert run_files(directory) == set()
        index.add_blocks(blocks)
        assert_matches(index, Model(blocks), blocks)


def test_a_damaged_owner_run_falls_back_to_the_blocks_that_brought_its_accounts(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(ledger_limits, "index_memory_bytes_max", 0)  # a file every add
    keys = [os.urandom(32) for _ in range(4)]
    blocks = random_blocks(9, 10, seed=12)
    with Index.open(tmp_path) as index:  # as the ledger does: accounts, then their blocks
        for number, (first, end) in enumerate([(0, 3), (3, 6), (6, 9)]):
            index.add_accounts([(keys[number], number + 1), (keys[3], number + 10)])
            index.add_blocks(blocks[first:end])
        owner_runs = list(index._current().owners)
    assert [run.first for run in owner_runs] == [0, 3, 6]
    damage(owner_runs[1].path, "bit flipped")
    with Index.open(tmp_path) as index:
        assert index.indexed_height == 3
        assert index.accounts_of(keys[0]) == [1] and index.accounts_of(keys[1]) == []
        assert index.accounts_of(keys[3]) == [10]
        for number, (first, end) in enumerate([(3, 6), (6, 9)], start=1):
            index.add_accounts([(keys[number], number + 1), (keys[3], number + 10)])
            index.add_blocks(blocks[first:end])
        assert index.accounts_of(keys[1]) == [2] and index.accounts_of(keys[3]) == [10, 11, 12]
        assert_matches(index, Model(blocks), blocks)


def test_a_ledger_catches_up_after_its_index_lost_runs(tmp_path):
    chain_id, alice, bob = 5, PrivateKey.generate(), PrivateKey.generate()
    config = ChainConfig(name="damage", chain_id=chain_id, asset_code="TSU",
                         allocations=((alice.public_key, 10_000), (bob.public_key, 10_000)))
    txids = []
    with Ledger.create(tmp_path, config) as ledger:
        for sequence in range(1, 7):  # six blocks of two transfers each
            batch = [records.transfer(chain_id, sequence, 1, 2, 3),
                     records.transfer(chain_id, sequence, 2, 1, 1)]
            answer = ledger.submit_batch(b"".join(batch), alice.sign_record(batch[0]) +
                                         bob.sign_record(batch[1]))
            assert not answer.codes.any()
            txids += [bytes(txid) for txid in answer.txids]
        ledger.wait_indexed()
        expected = [ledger.transaction(txid).height for txid in txids]
        history = [(info.height, info.position) for info in ledger.history(1)]
    runs = sorted((directory for directory in (tmp_path / FOLDER).iterdir()
                   if directory.name.startswith("blocks-")), key=lambda path: path.name)
    damage(runs[-1], "bit flipped")
    with Index.open(tmp_path) as index:  # what Ledger.open finds
        assert index.indexed_height < 7
    with Ledger.open(tmp_path) as ledger:
        ledger.wait_indexed()
        assert [ledger.transaction(txid).height for txid in txids] == expected
        assert [(info.height, info.position) for info in ledger.history(1)] == history
        assert ledger.accounts_of(alice.public_key) == [1]
