"""State snapshots: numpy arrays and a little metadata, written atomically, checked on load.

A snapshot is labelled with a height and the hash of the block its state ends with; what the
height counts is the ledger's convention (this module only orders snapshots by it, newest =
highest). The newest :data:`tsunagi.ledger.limits.snapshots_kept` are kept, so a damaged
newest one falls back to the one before it; ``accept`` lets the caller also pass over a
snapshot whose block is no longer on its chain (after a reorg) without reading its arrays.

File ``snapshot-<height, 12 digits>.tsnap`` (integers little-endian)::

    0     8  magic b"TSNAP001"
    8     4  header length
    12    4  crc32 of the header
    16    .  header: UTF-8 JSON {height, block_hash (hex), meta, arrays: [{name, descr (numpy's
             .npy dtype description), shape, offset, nbytes, crc32}]}
    then each array's raw bytes at its offset (a multiple of 4096), zeros in between; the file
    ends where the last array ends.

The header's crc covers the array checksums it lists, and the gaps must be zeros, so one flipped
bit anywhere in the file is found. No pickle: a damaged or hostile file is only bytes to check.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tsunagi.errors import EncodingError
from tsunagi.ledger import limits
from tsunagi.ledger.checksum import crc32
from tsunagi.ledger.log import fsync_directory, read_exactly, write_all

__all__ = ["Snapshot", "drop_snapshots_above", "load_newest_snapshot", "save_snapshot",
           "snapshot_heights"]

log = logging.getLogger(__name__)

MAGIC = b"TSNAP001"
PREFIX = struct.Struct("<8sII")  # magic, header length, header crc32
_NAME = re.compile(r"snapshot-(\d{12})\.tsnap")


class Snapshot(NamedTuple):
    """A loaded snapshot: its height label, the hash of the block its state ends with, the
    arrays (writable, owning their memory), the meta dict as saved, and its file."""

    height: int
    block_hash: bytes
    arrays: dict[str, np.ndarray]
    meta: dict
    path: Path


class _Damaged(Exception):
    """A snapshot file that fails a check (the message says which)."""


class _Refused(Exception):
    """The caller's ``accept`` turned a snapshot down."""


def _path(directory: Path, height: int) -> Path:
    return directory / f"snapshot-{height:012d}.tsnap"


def snapshot_heights(directory: str | os.PathLike) -> list[int]:
    """Heights of the snapshot files in ``directory``, newest first (intact or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = (_NAME.fullmatch(entry.name) for entry in directory.iterdir())
    return sorted((int(match.group(1)) for match in found if match), reverse=True)


def _aligned(offset: int) -> int:
    alignment = limits.snapshot_alignment_bytes
    return -(-offset // alignment) * alignment


def _layout(height: int, block_hash: bytes, arrays: dict[str, np.ndarray],
            meta: dict) -> tuple[bytes, list[tuple[int, np.ndarray]]]:
    """The header bytes and (offset, contiguous array) of each array."""
    entries, placed = [], []
    for name, array in arrays.items():
        if not isinstance(name, str) or not isinstance(array, np.ndarray):
            raise EncodingError(f"snapshot arrays map names to numpy arrays, got {name!r}")
        if array.dtype.hasobject:
            raise EncodingError(f"snapshot array {name!r} holds Python objects: not storable")
        contiguous = np.ascontiguousarray(array)
        entries.append({"name": name, "descr": np.lib.format.dtype_to_descr(array.dtype),
                        "shape": list(array.shape), "nbytes": contiguous.nbytes,
                        "crc32": crc32(_bytes_of(contiguous))})
        placed.append(contiguous)
    try:
        document = {"height": height, "block_hash": bytes(block_hash).hex(), "meta": meta,
                    "arrays": entries}
        size = len(json.dumps(document).encode())
    except (TypeError, ValueError) as error:
        raise EncodingError(f"snapshot meta must be plain JSON data: {error}") from None
    # Offsets go into the header, which sits before the arrays: place them past a header that
    # is padded to fit its own offsets (20 digits each at most).
    offset = _aligned(PREFIX.size + size + 32 * len(entries))
    for entry in entries:
        entry["offset"] = offset
        offset = _aligned(offset + entry["nbytes"])
    header = json.dumps(document).encode()
    return header, [(entry["offset"], array) for entry, array in zip(entries, placed)]


def _bytes_of(array: np.ndarray) -> np.ndarray:
    """The raw bytes of a C-contiguous array as a flat uint8 view (no copy)."""
    return array.reshape(-1).view(np.uint8)


def save_snapshot(directory: str | os.PathLike, height: int, block_hash: bytes,
                  arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Writes a snapshot atomically (temporary file, fsync, rename, fsync of the directory),
    then deletes all but the newest ``limits.snapshots_kept``. Returns its path."""
    directory = Path(directory)
    if height < 0 or len(block_hash) != 32:
        raise EncodingError(f"a snapshot needs a height >= 0 and a 32-byte block hash, got "
                            f"{height} and {len(block_hash)} bytes")
    directory.mkdir(parents=True, exist_ok=True)
    header, placed = _layout(height, block_hash, arrays, meta)
    pieces: list = [PREFIX.pack(MAGIC, len(header), crc32(header)), header]
    written = PREFIX.size + len(header)
    for offset, array in placed:
        assert offset >= written, "the header outgrew the room left for it"
        pieces += [bytes(offset - written), _bytes_of(array)]
        written = offset + array.nbytes
    path = _path(directory, height)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, pieces, 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)
    fsync_directory(directory)
    _prune(directory)
    return path


def _prune(directory: Path) -> None:
    doomed = [_path(directory, height)
              for height in snapshot_heights(directory)[limits.snapshots_kept:]]
    # A crash during an earlier save leaves its temporary file behind.
    doomed += list(directory.glob("snapshot-*.tsnap.tmp"))
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_directory(directory)


def drop_snapshots_above(directory: str | os.PathLike, height: int) -> None:
    """Deletes the snapshots labelled above ``height`` (after a reorg they describe blocks
    that are gone)."""
    directory = Path(directory)
    doomed = [h for h in snapshot_heights(directory) if h > height]
    for doomed_height in doomed:
        _path(directory, doomed_height).unlink(missing_ok=True)
    if doomed:
        fsync_directory(directory)


def load_newest_snapshot(directory: str | os.PathLike,
                         accept: Callable[[int, bytes], bool] | None = None) -> Snapshot | None:
    """The newest intact snapshot in ``directory`` that ``accept(height, block_hash)`` (when
    given) takes, or None.

    A damaged or partial snapshot is skipped with a warning (logger ``tsunagi.ledger.snapshot``)
    for the one before it, and renamed to ``*.tsnap.damaged`` for the operator to look at: it no
    longer counts among the kept snapshots, so the next save does not delete an intact one. One
    that ``accept`` refuses is skipped (and left alone) before its arrays are read.
    """
    directory = Path(directory)
    for height in snapshot_heights(directory):
        path = _path(directory, height)
        try:
            return _load(path, height, accept)
        except _Refused:
            log.info("passing over snapshot %s: its block is not on this chain", path)
        except _Damaged as error:
            log.warning("skipping damaged snapshot %s (%s): falling back to an older one; "
                        "the file is kept as %s.damaged", path, error, path.name)
            path.replace(path.with_name(path.name + ".damaged"))
            fsync_directory(directory)
        except OSError as error:
            log.warning("skipping unreadable snapshot %s (%s): falling back to an older one",
                        path, error)
    return None


def snapshot_block_hashes(directory: str | os.PathLike) -> dict[int, bytes]:
    """The block hash each intact snapshot header records, by height (arrays are not read).

    A snapshot is an independent record of which block the chain had at its height, so
    verification compares it with the log.
    """
    directory = Path(directory)
    found = {}
    for height in snapshot_heights(directory):
        try:
            fd = os.open(_path(directory, height), os.O_RDONLY)
        except OSError:
            continue
        try:
            document = _read_prefix_and_header(fd, os.fstat(fd).st_size)
            if document.get("height") == height:
                found[height] = bytes.fromhex(document["block_hash"])
        except (_Damaged, KeyError, TypeError, ValueError, OSError):
            continue  # a damaged snapshot records nothing trustworthy
        finally:
            os.close(fd)
    return found


def _read_prefix_and_header(fd: int, size: int) -> dict:
    prefix = os.pread(fd, PREFIX.size, 0)
    if len(prefix) < PREFIX.size:
        raise _Damaged(f"file cut short at {size} bytes")
    magic, length, header_crc = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise _Damaged(f"bad magic {magic!r}")
    if length > limits.snapshot_header_bytes_max:
        raise _Damaged(f"header length {length} is beyond any snapshot's")
    header = read_exactly(fd, length, PREFIX.size)
    if len(header) != length or crc32(header) != header_crc:
        raise _Damaged("header checksum mismatch")
    try:
        document = json.loads(header)
        document["header_end"] = PREFIX.size + length
        return document
    except ValueError as error:
        raise _Damaged(f"unreadable header: {error}") from None


def _read_array(fd: int, entry: dict, expected_offset: int) -> np.ndarray:
    array = np.empty(tuple(entry["shape"]), np.lib.format.descr_to_dtype(entry["descr"]))
    offset = entry["offset"]
    if array.nbytes != entry["nbytes"] or offset < expected_offset:
        raise _Damaged(f"array {entry['name']!r} does not fit its place")
    gap = read_exactly(fd, offset - expected_offset, expected_offset)
    if gap.count(0) != len(gap):
        raise _Damaged(f"nonzero bytes before array {entry['name']!r}")
    view = memoryview(_bytes_of(array))
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if not got:
            raise _Damaged(f"file cut short inside array {entry['name']!r}")
        done += got
    if crc32(view) != entry["crc32"]:
        raise _Damaged(f"array {entry['name']!r} checksum mismatch")
    return array


def _load(path: Path, height: int, accept: Callable[[int, bytes], bool] | None) -> Snapshot:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        document = _read_prefix_and_header(fd, size)
        try:
            if document["height"] != height:
                raise _Damaged(f"its header says height {document['height']}")
            block_hash = bytes.fromhex(document["block_hash"])
            if accept is not None and not accept(height, block_hash):
                raise _Refused
            arrays, end = {}, document["header_end"]
            for entry in document["arrays"]:
                arrays[entry["name"]] = _read_array(fd, entry, end)
                end = entry["offset"] + entry["nbytes"]
            meta = document["meta"]
        except (KeyError, TypeError, ValueError) as error:
            raise _Damaged(f"header lacks a field or has a wrong one: {error!r}") from None
        if size != end:
            raise _Damaged(f"file is {size} bytes, its header describes {end}")
        return Snapshot(height, block_hash, arrays, meta, path)
    finally:
        os.close(fd)
