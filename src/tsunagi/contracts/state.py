"""World state: a key-value map whose every block of changes ends in a 32-byte state root.

The root commits to every value, so a value (or a deleted key's absence) can be proven against
the root alone. The tree is an incremental binary Merkle tree over *slots*: a key gets the next
slot the first time it is written and keeps it for ever (a delete leaves a tombstone leaf), so
the order of leaves follows the order of blocks, which every node replays alike. A block's
changes mark their slots dirty, and :meth:`WorldState.end_block` re-hashes only the dirty
leaves and their ancestors, level by level, one native batch call a level
(:func:`tsunagi.hashing.sha256d_records` over fixed-size 65-byte nodes).

Hashes are SHA-256d of tagged preimages, so a leaf can never pass for an inner node::

    leaf      sha256d(0x00 || sha256(key) || sha256(value))      a present key
              sha256d(0x01 || sha256(key) || 32 zero bytes)      a deleted key (tombstone)
    inner     sha256d(0x02 || left || right)                     right is 32 zero bytes for
                                                                 the last node of an odd level
    root      sha256d(0x03 || slot count (u64 LE) || top node)   top is 32 zeros when empty

A proof is ``count (u64 LE) || slot (u64 LE) || sibling hashes, leaf level first``; the count
fixes the tree's shape, so a proof names one position only. Absence can be proven only for a
key that was written once and deleted; a key never written has no slot, and :meth:`prove`
says so (a sparse or sorted tree would prove it, at several times the hashing per change).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import deque
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tsunagi.contracts import limits
from tsunagi.errors import CorruptLogError, EncodingError, NotFoundError, StorageError
from tsunagi.hashing import sha256, sha256d, sha256d_records
from tsunagi.ledger.log import write_file_atomically

__all__ = ["WorldState", "verify_proof"]

TAG_LEAF, TAG_TOMBSTONE, TAG_INNER, TAG_ROOT = 0, 1, 2, 3
NODE_BYTES = 65  # a tag and two 32-byte hashes
ZERO_HASH = bytes(32)
_PROOF_HEAD = struct.Struct("<QQ")
_ROOT_HEAD = struct.Struct("<BQ")


class _BlockUndo(NamedTuple):
    """What taking a block back needs: the height and root before it, the slot count before
    it, and each key it changed with its value before (None: absent)."""

    height_before: int | None
    root_before: bytes
    count_before: int
    previous: dict[bytes, bytes | None]


def _parents(sorted_nodes: np.ndarray) -> np.ndarray:
    """The distinct parents of sorted, distinct node indices (sorted too): a neighbour pass,
    several times quicker than np.unique's hashing on large levels."""
    parents = sorted_nodes >> 1
    if len(parents) < 2:
        return parents
    keep = np.empty(len(parents), dtype=bool)
    keep[0] = True
    np.not_equal(parents[1:], parents[:-1], out=keep[1:])
    return parents[keep]


def _tree_root(count: int, top: bytes) -> bytes:
    return sha256d(_ROOT_HEAD.pack(TAG_ROOT, count) + top)


def _key_hash(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _check_key(key) -> bytes:
    if not isinstance(key, bytes):
        raise EncodingError(f"a state key is bytes, not {type(key).__name__}")
    if not 0 < len(key) <= limits.state_key_bytes_max:
        raise EncodingError(f"a state key is 1 to {limits.state_key_bytes_max} bytes, "
                            f"got {len(key)}")
    return key


class WorldState:
    """Key-value state with a root per block and undo data for the newest blocks.

    Reads (:meth:`get`) work at any time; writes only between :meth:`begin_block` and
    :meth:`end_block`. ``height`` is the last ended block (None before the first).
    """

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}
        self._slots: dict[bytes, int] = {}
        self._slot_keys: list[bytes] = []
        self._key_hashes = np.zeros((0, 32), dtype=np.uint8)
        self._levels: list[np.ndarray] = []
        self._height: int | None = None
        self._root = _tree_root(0, ZERO_HASH)
        self._open: int | None = None  # the height of the block in progress
        self._changes: dict[bytes, bytes | None] = {}  # its keys, with their values before
        self._count_before = 0
        self._pending: dict[int, bytes | None] = {}  # slots the open block wrote: new values
        self._undo: deque[_BlockUndo] = deque(maxlen=limits.state_undo_blocks_max)

    # --- reading ----------------------------------------------------------------------------------

    @property
    def height(self) -> int | None:
        return self._height

    @property
    def root(self) -> bytes:
        """The root after the last ended block."""
        return self._root

    @property
    def slot_count(self) -> int:
        """Keys ever written (the leaves of the tree, tombstones included)."""
        return len(self._slot_keys)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: bytes) -> bool:
        return key in self._values

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None; inside a block, with the block's writes so far."""
        return self._values.get(key)

    def items(self):
        """(key, value) of every present key, in slot order (the order of first writes)."""
        values = self._values
        return ((key, values[key]) for key in self._slot_keys if key in values)

    # --- writing ----------------------------------------------------------------------------------

    def begin_block(self, height: int) -> None:
        """Opens the block at ``height``: the next after :attr:`height` (any, when empty)."""
        if self._open is not None:
            raise StorageError(f"block {self._open} is still open: end_block() it first")
        if not isinstance(height, int) or height < 0:
            raise EncodingError(f"a block height is an int >= 0, got {height!r}")
        if self._height is not None and height != self._height + 1:
            raise StorageError(f"the state is at block {self._height}: the next block is "
                               f"{self._height + 1}, not {height}")
        self._open, self._changes, self._count_before = height, {}, len(self._slot_keys)
        self._pending = {}

    def set(self, key: bytes, value: bytes) -> None:
        """Sets ``key`` to ``value`` in the open block."""
        self._check_open()
        _check_key(key)
        if not isinstance(value, bytes):
            raise EncodingError(f"a state value is bytes, not {type(value).__name__}")
        if len(value) > limits.state_value_bytes_max:
            raise EncodingError(f"a state value is at most {limits.state_value_bytes_max} "
                                f"bytes, got {len(value)}")
        if key not in self._changes:
            self._changes[key] = self._values.get(key)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = len(self._slot_keys)
            self._slot_keys.append(key)
        self._pending[slot] = value
        self._values[key] = value

    def delete(self, key: bytes) -> None:
        """Removes ``key`` in the open block (nothing happens when it is absent)."""
        self._check_open()
        _check_key(key)
        if key in self._values:
            if key not in self._changes:
                self._changes[key] = self._values[key]
            del self._values[key]
            self._pending[self._slots[key]] = None

    def end_block(self) -> bytes:
        """Closes the open block: re-hashes what it changed and returns the new root."""
        self._check_open()
        pending, self._pending = self._pending, {}
        self._undo.append(_BlockUndo(self._height, self._root, self._count_before,
                                     self._changes))
        self._height, self._open, self._changes = self._open, None, {}
        self._root = self._rehash(np.fromiter(pending, np.int64, len(pending)),
                                  list(pending.values()))
        return self._root

    def undo_block(self, height: int) -> bytes:
        """Takes back the tip block ``height`` exactly and returns the root before it."""
        if self._open is not None:
            raise StorageError(f"block {self._open} is open: end_block() it before an undo")
        if self._height is None or height != self._height:
            raise StorageError(f"only the tip block ({self._height}) can be undone, "
                               f"not {height}")
        if not self._undo:
            raise StorageError(f"no undo data for block {height}: the state keeps the newest "
                               f"{limits.state_undo_blocks_max} blocks since it was loaded")
        undo = self._undo.pop()
        for key, value in undo.previous.items():
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = value
        for key in self._slot_keys[undo.count_before:]:
            del self._slots[key]
        del self._slot_keys[undo.count_before:]
        pending = {slot: self._values.get(key) for key in undo.previous
                   if (slot := self._slots.get(key)) is not None}
        if undo.count_before:  # the new right edge pairs with padding again
            edge = undo.count_before - 1
            pending[edge] = self._values.get(self._slot_keys[edge])
        self._height = undo.height_before
        self._root = self._rehash(np.fromiter(pending, np.int64, len(pending)),
                                  list(pending.values()))
        assert self._root == undo.root_before, "undo did not restore the root"
        return self._root

    def _check_open(self) -> None:
        if self._open is None:
            raise StorageError("no block is open: call begin_block(height) first")

    # --- the tree ---------------------------------------------------------------------------------

    def _rehash(self, slots: np.ndarray, present: list[bytes | None]) -> bytes:
        """Re-hashes the leaves of ``slots`` (distinct, in any order), whose values are
        ``present`` (None: deleted), and their ancestors; returns the root."""
        count = len(self._slot_keys)
        self._grow(count)
        if count == 0:
            return _tree_root(0, ZERO_HASH)
        if len(slots):
            self._levels[0][slots] = sha256d_records(self._leaf_nodes(slots, present),
                                                     NODE_BYTES)
        dirty = np.sort(slots)
        level, width = 0, count
        while width > 1:
            dirty = _parents(dirty)
            nodes = self._levels[level]
            records = np.zeros((len(dirty), NODE_BYTES), dtype=np.uint8)
            records[:, 0] = TAG_INNER
            records[:, 1:33] = nodes[dirty * 2]
            right = dirty * 2 + 1
            has_right = right < width
            records[has_right, 33:] = nodes[right[has_right]]
            level, width = level + 1, (width + 1) // 2
            if len(dirty):
                self._levels[level][dirty] = sha256d_records(records, NODE_BYTES)
        return _tree_root(count, self._levels[level][0].tobytes())

    def _leaf_nodes(self, slots: np.ndarray, present: list[bytes | None]) -> np.ndarray:
        sha = hashlib.sha256
        records = np.empty((len(slots), NODE_BYTES), dtype=np.uint8)
        records[:, 0] = np.frombuffer(bytes([TAG_TOMBSTONE if value is None else TAG_LEAF
                                             for value in present]), dtype=np.uint8)
        records[:, 1:33] = self._key_hashes[slots]
        hashes = b"".join([ZERO_HASH if value is None else sha(value).digest()
                           for value in present])
        records[:, 33:] = np.frombuffer(hashes, dtype=np.uint8).reshape(-1, 32)
        return records

    def _grow(self, count: int) -> None:
        """Makes room for ``count`` leaves in every level, and hashes the keys of new slots."""
        known = len(self._key_hashes)
        if count > known:
            fresh = b"".join(_key_hash(key) for key in self._slot_keys[known:count])
            self._key_hashes = np.concatenate(
                [self._key_hashes, np.frombuffer(fresh, dtype=np.uint8).reshape(-1, 32)])
        elif count < known:
            self._key_hashes = self._key_hashes[:count]
        level, width = 0, count
        while True:
            if level == len(self._levels):
                self._levels.append(np.zeros((max(width, 1), 32), dtype=np.uint8))
            elif len(self._levels[level]) < width:
                grown = np.zeros((max(width, 2 * len(self._levels[level])), 32), np.uint8)
                grown[:len(self._levels[level])] = self._levels[level]
                self._levels[level] = grown
            if width <= 1:
                return
            level, width = level + 1, (width + 1) // 2

    # --- proofs -----------------------------------------------------------------------------------

    def prove(self, key: bytes) -> bytes:
        """A proof of ``key``'s value (or absence, for a deleted key) against :attr:`root`."""
        if self._open is not None:
            raise StorageError(f"block {self._open} is open: proofs are against ended blocks")
        slot = self._slots.get(_check_key(key))
        if slot is None:
            raise NotFoundError(f"key {key.hex()} was never written, so it has no slot to prove "
                                "(this tree proves absence only of keys written and deleted)")
        count, index, width, level = len(self._slot_keys), slot, len(self._slot_keys), 0
        siblings = []
        while width > 1:
            sibling = index ^ 1
            nodes = self._levels[level]
            siblings.append(nodes[sibling].tobytes() if sibling < width else ZERO_HASH)
            index, width, level = index >> 1, (width + 1) // 2, level + 1
        return _PROOF_HEAD.pack(count, slot) + b"".join(siblings)

    # --- snapshots --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes the state at its last ended block to ``path`` atomically (see _snapshot)."""
        if self._open is not None:
            raise StorageError(f"block {self._open} is open: save between blocks")
        _snapshot_write(Path(path), self)

    def to_bytes(self) -> bytes:
        """The state at its last ended block as ``save`` writes it (see _snapshot_bytes)."""
        if self._open is not None:
            raise StorageError(f"block {self._open} is open: take a snapshot between blocks")
        return _snapshot_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "in memory") -> WorldState:
        """The state of ``to_bytes``; CorruptLogError naming ``where`` when it is damaged."""
        return _snapshot_parse(bytes(data), where, cls)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WorldState:
        """The state saved at ``path``, with the undo data of its newest blocks; CorruptLogError
        when the file is damaged."""
        return _snapshot_read(Path(path), cls)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: bytes) -> bool:
    """True when ``proof`` shows that ``key`` holds ``value`` (None: deleted) under ``root``.

    Pure: needs nothing but its arguments. Any malformed proof is False, never an exception.
    """
    if not (isinstance(root, bytes) and isinstance(key, bytes) and isinstance(proof, bytes)):
        return False
    if len(proof) < _PROOF_HEAD.size or (len(proof) - _PROOF_HEAD.size) % 32:
        return False
    count, index = _PROOF_HEAD.unpack_from(proof)
    if index >= count:
        return False
    siblings = [proof[start:start + 32] for start in range(_PROOF_HEAD.size, len(proof), 32)]
    if value is None:
        node = sha256d(bytes([TAG_TOMBSTONE]) + _key_hash(key) + ZERO_HASH)
    elif isinstance(value, bytes):
        node = sha256d(bytes([TAG_LEAF]) + _key_hash(key) + hashlib.sha256(value).digest())
    else:
        return False
    width, position = count, index
    for sibling in siblings:
        if width <= 1:
            return False  # more siblings than the tree has levels
        if position & 1:
            node = sha256d(bytes([TAG_INNER]) + sibling + node)
        else:
            if position + 1 >= width and sibling != ZERO_HASH:
                return False  # the last node of an odd level pairs with padding only
            node = sha256d(bytes([TAG_INNER]) + node + sibling)
        position, width = position >> 1, (width + 1) // 2
    return width == 1 and _tree_root(count, node) == root


# --- the snapshot file ------------------------------------------------------------------------

SNAPSHOT_MAGIC = b"TSWORLD1"
# magic, height + 1 (0: no block yet), root, slot count
_SNAPSHOT_HEAD = struct.Struct("<8sQ32sQ")
_ENTRY_HEAD = struct.Struct("<HI")  # key length, value length + 1 (0: absent)
_UNDO_COUNT = struct.Struct("<I")
# height before + 1 (0: none), root before, slot count before, changed keys
_UNDO_HEAD = struct.Struct("<Q32sQI")


def _pack_entries(pairs, parts: list[bytes]) -> None:
    pack = _ENTRY_HEAD.pack
    for key, value in pairs:
        parts.append(pack(len(key), 0 if value is None else len(value) + 1))
        parts.append(key)
        if value is not None:
            parts.append(value)


def _snapshot_bytes(state: WorldState) -> bytes:
    """Layout: _SNAPSHOT_HEAD; each slot's key and value in slot order (_ENTRY_HEAD, key,
    value); the undo data of the newest blocks, oldest first (_UNDO_COUNT, then per block
    _UNDO_HEAD and its keys with their values before, as entries); SHA-256 of everything
    before it."""
    height = 0 if state.height is None else state.height + 1
    parts = [_SNAPSHOT_HEAD.pack(SNAPSHOT_MAGIC, height, state.root, state.slot_count)]
    values = state._values
    _pack_entries(((key, values.get(key)) for key in state._slot_keys), parts)
    parts.append(_UNDO_COUNT.pack(len(state._undo)))
    for undo in state._undo:
        before = 0 if undo.height_before is None else undo.height_before + 1
        parts.append(_UNDO_HEAD.pack(before, undo.root_before, undo.count_before,
                                     len(undo.previous)))
        _pack_entries(undo.previous.items(), parts)
    body = b"".join(parts)
    return body + sha256(body)


def _snapshot_write(path: Path, state: WorldState) -> None:
    """_snapshot_bytes, replacing ``path`` whole (tsunagi.ledger.log.write_file_atomically)."""
    write_file_atomically(path, _snapshot_bytes(state))

def _damaged(path: Path, why: str) -> CorruptLogError:
    return CorruptLogError(f"world state snapshot {path} is damaged ({why}): remove it and "
                           "replay the chain from an older snapshot or from genesis")


class _Reader:
    """Reads a snapshot body front to back; every overrun is _Truncated."""

    def __init__(self, data: bytes, end: int, position: int) -> None:
        self.data, self.end, self.position = data, end, position

    def take(self, layout: struct.Struct) -> tuple:
        if self.position + layout.size > self.end:
            raise _Truncated
        fields = layout.unpack_from(self.data, self.position)
        self.position += layout.size
        return fields

    def entry(self) -> tuple[bytes, bytes | None]:
        key_size, value_size = self.take(_ENTRY_HEAD)
        start = self.position
        self.position += key_size + max(value_size - 1, 0)
        if self.position > self.end:
            raise _Truncated
        key = self.data[start:start + key_size]
        return key, self.data[start + key_size:self.position] if value_size else None


class _Truncated(Exception):
    """A snapshot's fields run past its end."""


def _snapshot_read(path: Path, cls: type[WorldState]) -> WorldState:
    try:
        size = path.stat().st_size
        if size > limits.snapshot_bytes_max:
            raise _damaged(path, f"{size} bytes, above snapshot_bytes_max")
        data = path.read_bytes()
    except FileNotFoundError:
        raise StorageError(f"no world state snapshot at {path}") from None
    return _snapshot_parse(data, path, cls)


def _snapshot_parse(data: bytes, path, cls: type[WorldState]) -> WorldState:
    if len(data) < _SNAPSHOT_HEAD.size + 32 or sha256(data[:-32]) != data[-32:]:
        raise _damaged(path, "its checksum does not match")
    magic, height, root, count = _SNAPSHOT_HEAD.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise _damaged(path, f"magic {magic!r} is not {SNAPSHOT_MAGIC!r}")
    state, reader = cls(), _Reader(data, len(data) - 32, _SNAPSHOT_HEAD.size)
    try:
        for _ in range(count):
            key, value = reader.entry()
            if value is not None:
                state._values[key] = value
            state._slots[key] = len(state._slot_keys)
            state._slot_keys.append(key)
        for _ in range(reader.take(_UNDO_COUNT)[0]):
            before, root_before, count_before, changed = reader.take(_UNDO_HEAD)
            previous = dict(reader.entry() for _ in range(changed))
            state._undo.append(_BlockUndo(before - 1 if before else None, root_before,
                                          count_before, previous))
    except _Truncated:
        raise _damaged(path, "it ends inside an entry") from None
    if reader.position != reader.end or len(state._slots) != count:
        raise _damaged(path, "its entries do not fill it exactly once each")
    state._height = height - 1 if height else None
    state._root = state._rehash(np.arange(count, dtype=np.int64),
                                [state._values.get(key) for key in state._slot_keys])
    if state._root != root:
        raise _damaged(path, "its entries do not hash to the root it records")
    return state
