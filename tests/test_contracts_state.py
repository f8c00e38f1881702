"""World state: each block's root commits to every value, proofs check against the root alone,
an undone block leaves exactly the state before it, and a snapshot comes back whole or not at
all.

Method: roots are compared with a plain-Python reference (hashlib, the whole tree from scratch)
after random blocks of sets and deletes (hypothesis), so the native incremental update is
checked against a second implementation; proofs are checked for every key and against wrong
values, keys and roots; snapshots are saved, reloaded, and damaged byte by byte.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.contracts import WorldState, limits, verify_proof
from tsunagi.errors import CorruptLogError, EncodingError, NotFoundError, StorageError

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=list(HealthCheck))


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def reference_root(slots: list[tuple[bytes, bytes | None]]) -> bytes:
    """The root from scratch: leaves in slot order, tagged, odd levels padded with zeros."""
    level = [sha256d((b"\x00" if value is not None else b"\x01") + hashlib.sha256(key).digest()
                     + (hashlib.sha256(value).digest() if value is not None else bytes(32)))
             for key, value in slots]
    while len(level) > 1:
        if len(level) % 2:
            level.append(bytes(32))
        level = [sha256d(b"\x02" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    top = level[0] if level else bytes(32)
    return sha256d(struct.pack("<BQ", 3, len(slots)) + top)


class Reference:
    """The state as a plain dict of slots, in order of first write."""

    def __init__(self) -> None:
        self.slots: dict[bytes, bytes | None] = {}

    def apply(self, changes) -> None:
        for key, value in changes:
            if value is not None or key in self.slots:
                self.slots[key] = value

    def root(self) -> bytes:
        return reference_root(list(self.slots.items()))


def apply_block(state: WorldState, height: int, changes) -> bytes:
    state.begin_block(height)
    for key, value in changes:
        if value is None:
            state.delete(key)
        else:
            state.set(key, value)
    return state.end_block()


keys = st.binary(min_size=1, max_size=6)
changes = st.lists(st.tuples(keys, st.none() | st.binary(max_size=12)), max_size=40)


@SETTINGS
@given(st.lists(changes, min_size=1, max_size=8))
def test_every_root_matches_the_reference_and_undo_walks_back_through_them(blocks):
    state, reference, roots = WorldState(), Reference(), []
    for height, block in enumerate(blocks):
        roots.append(state.root)
        reference.apply(block)
        assert apply_block(state, height, block) == reference.root()
    for height in reversed(range(len(blocks))):
        assert state.undo_block(height) == roots[height]
    assert state.height is None and len(state) == 0 and state.slot_count == 0


@SETTINGS
@given(st.lists(changes, min_size=1, max_size=5))
def test_undo_then_redo_gives_the_same_root(blocks):
    state = WorldState()
    for height, block in enumerate(blocks):
        apply_block(state, height, block)
    tip, last = state.root, len(blocks) - 1
    state.undo_block(last)
    assert apply_block(state, last, blocks[last]) == tip


@SETTINGS
@given(changes.filter(bool))
def test_every_key_proves_its_value_or_its_deletion(block):
    state = WorldState()
    root = apply_block(state, 0, block)
    final = dict(block)  # each key's last write: a value, or None for a delete
    for key in {key for key, value in block if value is not None}:
        proof, value = state.prove(key), final[key]
        assert verify_proof(root, key, value, proof)
        assert not verify_proof(root, key, b"!" if value is None else None, proof)
        assert not verify_proof(root, key + b"!", value, proof)
        assert not verify_proof(bytes(32), key, value, proof)


def test_a_deleted_key_is_proven_absent_and_a_never_written_key_says_why_not():
    state = WorldState()
    apply_block(state, 0, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    root = apply_block(state, 1, [(b"b", None)])
    assert state.get(b"b") is None and b"b" not in state
    assert verify_proof(root, b"b", None, state.prove(b"b"))
    assert not verify_proof(root, b"b", b"2", state.prove(b"b"))
    with pytest.raises(NotFoundError, match="never written"):
        state.prove(b"zzz")


def test_malformed_proofs_are_false_never_an_exception():
    state = WorldState()
    root = apply_block(state, 0, [(bytes([i]), b"v") for i in range(1, 6)])
    proof = state.prove(b"\x03")
    for bad in (b"", proof[:-1], proof + bytes(32), proof[:16], struct.pack("<QQ", 5, 5),
                struct.pack("<QQ", 5, 1) + proof[16:], struct.pack("<QQ", 0, 0),
                struct.pack("<QQ", 6, 2) + proof[16:]):
        assert verify_proof(root, b"\x03", b"v", bad) is False
    assert verify_proof(root, b"\x03", "v", proof) is False  # a value is bytes


def test_the_last_node_of_an_odd_level_cannot_be_proven_twice():
    state = WorldState()
    root = apply_block(state, 0, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    proof = state.prove(b"c")  # slot 2 of 3: it pairs with zero padding
    count, slot = struct.unpack_from("<QQ", proof)
    forged = struct.pack("<QQ", count, 3) + proof[16:]  # the padding's place
    assert not verify_proof(root, b"c", b"3", forged)
    assert verify_proof(root, b"c", b"3", proof)


def test_writes_need_an_open_block_and_blocks_come_in_order():
    state = WorldState()
    with pytest.raises(StorageError, match="begin_block"):
        state.set(b"k", b"v")
    state.begin_block(7)
    with pytest.raises(StorageError, match="still open"):
        state.begin_block(8)
    state.set(b"k", b"v")
    state.end_block()
    with pytest.raises(StorageError, match="next block is 8"):
        state.begin_block(9)
    with pytest.raises(StorageError, match="only the tip"):
        state.undo_block(6)


@pytest.mark.parametrize("key, value, why", [
    (b"", b"v", "1 to"), (b"k" * (limits.state_key_bytes_max + 1), b"v", "1 to"),
    ("k", b"v", "bytes"), (b"k", "v", "bytes"),
    (b"k", b"v" * (limits.state_value_bytes_max + 1), "at most"),
])
def test_keys_and_values_out_of_bounds_are_refused(key, value, why):
    state = WorldState()
    state.begin_block(0)
    with pytest.raises(EncodingError, match=why):
        state.set(key, value)


def test_undo_data_is_kept_for_the_newest_blocks_only(monkeypatch):
    monkeypatch.setattr(limits, "state_undo_blocks_max", 2)
    state = WorldState()
    for height in range(4):
        apply_block(state, height, [(b"k", bytes([height]))])
    state.undo_block(3)
    state.undo_block(2)
    with pytest.raises(StorageError, match="no undo data for block 1"):
        state.undo_block(1)
    assert state.get(b"k") == b"\x01"


def test_a_snapshot_reloads_with_its_height_root_values_and_slots(tmp_path):
    state = WorldState()
    apply_block(state, 0, [(b"a", b"1"), (b"b", b"2"), (b"c", b"")])
    apply_block(state, 1, [(b"b", None), (b"d", b"4")])
    path = tmp_path / "world.state"
    state.save(path)
    loaded = WorldState.load(path)
    assert (loaded.height, loaded.root) == (1, state.root)
    assert list(loaded.items()) == [(b"a", b"1"), (b"c", b""), (b"d", b"4")]
    assert verify_proof(loaded.root, b"b", None, loaded.prove(b"b"))
    assert apply_block(loaded, 2, [(b"e", b"5")]) == apply_block(state, 2, [(b"e", b"5")])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_loaded_snapshot_can_undo_the_blocks_before_it(tmp_path):
    state, roots = WorldState(), []
    for height, block in enumerate([[(b"a", b"1")], [(b"a", b"2"), (b"b", b"3")],
                                    [(b"a", None), (b"c", b"4")]]):
        roots.append(state.root)
        apply_block(state, height, block)
    state.save(tmp_path / "world.state")
    loaded = WorldState.load(tmp_path / "world.state")
    for height in (2, 1, 0):
        assert loaded.undo_block(height) == roots[height]
    assert loaded.height is None and len(loaded) == 0


def test_an_empty_state_saves_and_loads(tmp_path):
    WorldState().save(tmp_path / "empty")
    loaded = WorldState.load(tmp_path / "empty")
    assert loaded.height is None and loaded.root == WorldState().root


def test_a_damaged_snapshot_is_refused_whichever_byte_is_hit(tmp_path):
    state = WorldState()
    apply_block(state, 0, [(b"key%d" % i, b"value%d" % i) for i in range(5)])
    path = tmp_path / "world.state"
    state.save(path)
    good = path.read_bytes()
    for offset in range(0, len(good), 7):
        damaged = bytearray(good)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptLogError, match="damaged"):
            WorldState.load(path)
    path.write_bytes(good[:-1])
    with pytest.raises(CorruptLogError, match="checksum"):
        WorldState.load(path)
    with pytest.raises(StorageError, match="no world state snapshot"):
        WorldState.load(tmp_path / "missing")
