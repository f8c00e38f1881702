"""Snapshots give back exactly the arrays and metadata saved, and a damaged or partial newest
snapshot is skipped, with a warning, for the one before it.

Method: round trips over several dtypes and shapes compared with numpy; the file is read back
here by its documented layout (struct and json); hypothesis flips one byte anywhere in the newest
file (prefix, header, padding, array data) and the older snapshot must be the one loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.errors import EncodingError
from tsunagi.ledger.snapshot import (
    drop_snapshots_above,
    load_newest_snapshot,
    save_snapshot,
    snapshot_heights,
)

PAIR = np.dtype([("amount", "<u8"), ("key", "u1", (32,)), ("flags", "u1")])


def state(accounts: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = np.zeros(5, PAIR)
    pairs["amount"] = rng.integers(0, 2**63, 5, dtype=np.uint64)
    pairs["key"] = rng.integers(0, 256, (5, 32), dtype=np.uint8)
    return {
        "balance": rng.integers(0, 2**64, accounts, dtype=np.uint64),
        "owner_key": rng.integers(0, 2**32, accounts, dtype=np.uint32),
        "keys": rng.integers(0, 256, (7, 32), dtype=np.uint8),
        "pairs": pairs,
        "big_endian": np.arange(3, dtype=">i4"),
        "empty": np.zeros(0, np.uint64),
        "count": np.array(accounts, np.int64),
        "strided": np.arange(20, dtype=np.uint16)[::3],  # saved as a contiguous copy
    }


def assert_same(arrays: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(arrays) == list(expected)
    for name, array in expected.items():
        assert arrays[name].dtype == array.dtype and arrays[name].shape == array.shape, name
        assert np.array_equal(arrays[name], array), name
        assert arrays[name].flags.writeable and arrays[name].flags.owndata, name


def test_round_trip_and_the_documented_layout(tmp_path):
    arrays = state(1000, seed=1)
    meta = {"holds": [[1, 2, 3]], "chain": "test", "next_account": 1001}
    path = save_snapshot(tmp_path, 17, b"\x07" * 32, arrays, meta)
    assert path.name == "snapshot-000000000017.tsnap"
    loaded = load_newest_snapshot(tmp_path)
    assert (loaded.height, loaded.block_hash, loaded.meta, loaded.path) == (17, b"\x07" * 32,
                                                                            meta, path)
    assert_same(loaded.arrays, arrays)
    raw = path.read_bytes()
    magic, length, header_crc = struct.unpack_from("<8sII", raw)
    header = raw[16:16 + length]
    assert magic == b"TSNAP001" and zlib.crc32(header) == header_crc
    entries = json.loads(header)["arrays"]
    balance = next(entry for entry in entries if entry["name"] == "balance")
    assert balance["offset"] % 4096 == 0
    assert raw[balance["offset"]:balance["offset"] + balance["nbytes"]] == \
        arrays["balance"].tobytes()
    assert len(raw) == entries[-1]["offset"] + entries[-1]["nbytes"]


def test_keeps_the_newest_two_and_drops_those_above_a_reorg(tmp_path):
    for height in (5, 9, 7, 12):
        save_snapshot(tmp_path, height, bytes(32), state(10, seed=height), {"h": height})
    assert snapshot_heights(tmp_path) == [12, 9]
    drop_snapshots_above(tmp_path, 10)
    assert snapshot_heights(tmp_path) == [9]
    assert load_newest_snapshot(tmp_path).meta == {"h": 9}
    assert load_newest_snapshot(tmp_path / "absent") is None


def test_refuses_what_it_could_not_read_back(tmp_path):
    with pytest.raises(EncodingError, match="Python objects"):
        save_snapshot(tmp_path, 1, bytes(32), {"bad": np.array([object()])}, {})
    with pytest.raises(EncodingError, match="JSON"):
        save_snapshot(tmp_path, 1, bytes(32), {}, {"bad": {1, 2}})
    with pytest.raises(EncodingError):
        save_snapshot(tmp_path, 1, bytes(31), {}, {})
    assert snapshot_heights(tmp_path) == []


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pair")
    save_snapshot(directory, 3, b"\x03" * 32, state(300, seed=3), {"h": 3})
    save_snapshot(directory, 4, b"\x04" * 32, state(300, seed=4), {"h": 4})
    return directory


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_a_flipped_byte_anywhere_in_the_newest_falls_back_to_the_older(pair, caplog, where, mask):
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(shutil.copytree(pair, Path(scratch) / "d"))
        newest = directory / "snapshot-000000000004.tsnap"
        data = bytearray(newest.read_bytes())
        data[int(where * len(data))] ^= mask
        newest.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tsunagi.ledger.snapshot"):
            loaded = load_newest_snapshot(directory)
        assert snapshot_heights(directory) == [3]  # the damaged one is set aside
        assert (directory / "snapshot-000000000004.tsnap.damaged").exists()
    assert (loaded.height, loaded.meta, loaded.block_hash) == (3, {"h": 3}, b"\x03" * 32)
    assert_same(loaded.arrays, state(300, seed=3))
    assert "snapshot-000000000004.tsnap" in caplog.text


def test_a_partial_newest_or_a_leftover_temporary_file_is_not_loaded(pair, tmp_path):
    directory = Path(shutil.copytree(pair, tmp_path / "d"))
    newest = directory / "snapshot-000000000004.tsnap"
    (directory / "snapshot-000000000009.tsnap.tmp").write_bytes(newest.read_bytes()[:5000])
    newest.write_bytes(newest.read_bytes()[:-1])
    assert load_newest_snapshot(directory).height == 3
    (directory / "snapshot-000000000003.tsnap").write_bytes(b"")
    assert load_newest_snapshot(directory) is None
    save_snapshot(directory, 10, bytes(32), {}, {})  # cleans the temporary file up
    assert sorted(path.name for path in directory.iterdir()) == [
        "snapshot-000000000003.tsnap.damaged", "snapshot-000000000004.tsnap.damaged",
        "snapshot-000000000010.tsnap"]
    assert load_newest_snapshot(directory).arrays == {}


def test_accept_passes_over_a_snapshot_of_another_chain_and_keeps_it(pair, tmp_path):
    directory = Path(shutil.copytree(pair, tmp_path / "d"))
    seen = []

    def on_my_chain(height: int, block_hash: bytes) -> bool:
        seen.append(height)
        return block_hash == b"\x03" * 32

    loaded = load_newest_snapshot(directory, accept=on_my_chain)
    assert (loaded.height, seen) == (3, [4, 3])
    assert snapshot_heights(directory) == [4, 3]  # refused is not damaged: nothing renamed
    assert load_newest_snapshot(directory, accept=lambda height, block_hash: False) is None
